"""Everything that handles a trained model after training, one file per job.

* :mod:`~mobileseg.deploy.runtimes`: open any model file (checkpoint, ONNX, TorchScript) as a backend.
* :mod:`~mobileseg.deploy.onnx`, :mod:`~mobileseg.deploy.torchscript`: export per format.
* :mod:`~mobileseg.deploy.rewrites`: model rewrites for inference (BatchNorm folding, sub-pixel convolutions).
* :mod:`~mobileseg.deploy.onnx_graph`: ONNX graph surgery for the int8 graph.
* :mod:`~mobileseg.deploy.int8`: static int8 quantization and what it costs.
* :mod:`~mobileseg.deploy.parity`: does an exported file compute what the PyTorch model computes?
* :mod:`~mobileseg.deploy.samples`: real images for parity and calibration (the model's own dataset).
* :mod:`~mobileseg.deploy.export`: the ``mobileseg export`` command.
"""
