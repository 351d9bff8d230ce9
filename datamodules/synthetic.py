"""The embedded default: synthetic clips written once in the MSR-VTT on-disk format, then read as MSR-VTT."""
from __future__ import annotations

from datamodules.msrvtt import MSRVTTDataModule


class SyntheticDataModule(MSRVTTDataModule):
    """Synthetic MSR-VTT (generated on first use by ``xclip_pl.data.synthetic``); needs no download.

    Args:
        root: where the synthetic dataset is written (once) and read from.
        num_train: number of synthetic training videos (each with several captions).
        num_test: number of synthetic test videos (one caption each; val = test as in MSR-VTT).
        synthetic_seed: seed of the generator (a different seed is a different dataset).
        **kwargs: the other arguments of :class:`MSRVTTDataModule` and :class:`VideoTextDataModule`.
    """

    def __init__(self, root: str = ".cache/synthetic-msrvtt", num_train: int = 1000, num_test: int = 250,
                 synthetic_seed: int = 0, **kwargs) -> None:
        super().__init__(root=root, **kwargs)
        self.num_train, self.num_test, self.synthetic_seed = num_train, num_test, synthetic_seed

    def prepare_data(self) -> None:
        """Generate the dataset if it is not there yet (Lightning calls this on one process per node)."""
        from xclip_pl.data.synthetic import ensure_synthetic_msrvtt  # noqa: PLC0415 (heavy, only when used)

        ensure_synthetic_msrvtt(self.root, num_train=self.num_train, num_test=self.num_test, seed=self.synthetic_seed)

    def setup(self, stage: str | None = None) -> None:
        """Generate defensively (e.g. when used without a Trainer), then set up as MSR-VTT."""
        self.prepare_data()
        super().setup(stage)
