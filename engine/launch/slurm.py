"""Where Slurm jobs submitted by an earlier advlc find their entry point: submitit pickles
`engine.launch.slurm.SlurmTrain`, and a job that waits or is requeued across an upgrade loads it
from here. The executor itself is engine.launch.executors.slurm."""

from engine.launch.executors.slurm import SlurmTrain

__all__ = ["SlurmTrain"]
