"""Any talking-head video -> the project dataset format."""
