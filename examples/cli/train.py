"""Train the demo classifier from a YAML file with LightningCLI: every monitor configured in config.yaml.

python examples/cli/train.py fit --config examples/cli/config.yaml
python examples/cli/train.py fit --trainer.callbacks.help lightning_spectral.callbacks.HessianEigenMonitor
    # every argument of that monitor, with its help text (likewise NTKTraceMonitor, WeightSpectrumMonitor,
    # SpectralEarlyStopping)
"""

from pytorch_lightning.cli import LightningCLI

from lightning_spectral.demo import DemoClassifier


def main(args=None) -> None:
    LightningCLI(DemoClassifier, args=args, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
