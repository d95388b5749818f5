"""Deployment targets: exported model files, the runtimes that run them, and the checks that they match PyTorch."""
