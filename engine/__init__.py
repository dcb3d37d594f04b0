"""Models and inference for the presenter: synchronous, torch + numpy, no asyncio."""
