"""Deployment: a trained run as an embedder, its ONNX export, and gallery building/search.

Needs the ``deploy`` extra (faiss-cpu, onnx, onnxruntime, onnxscript); training never imports
this package.
"""
