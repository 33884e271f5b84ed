"""The arq worker: the only layer that imports arq's Worker."""
