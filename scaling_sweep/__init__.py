"""scaling-sweep: declare scaling-law grids, train them with IMP anywhere, fit the laws."""

__version__ = "0.1.0"
