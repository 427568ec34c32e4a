"""Example third-party task package for ofa-unified."""

from ofa_example_task.counting import CountObjectsTask

__all__ = ["CountObjectsTask"]
