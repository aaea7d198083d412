"""The engine: one interpreter of the workflow tree, driven synchronously or with asyncio."""
