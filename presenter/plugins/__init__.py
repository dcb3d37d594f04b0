"""Adapters that put the presenter into other frameworks' pipelines (optional extras):
``presenter.plugins.pipecat_processor`` (``pip install 'presenter[pipecat]'``) and
``presenter.plugins.livekit_video`` (``pip install 'presenter[livekit]'``). Both are built on
:class:`presenter.avatar_session.AvatarSession`."""
