"""Shared pytest setup: tests run on CPU, serially, with tiny shapes."""
import torch

torch.set_num_threads(2)
