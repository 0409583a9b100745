"""Lightning callbacks every task shares: results, throughput, NaN guard, image grids, resume."""
