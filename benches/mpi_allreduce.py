"""The reference side of benches/mpi_allreduce.rs: mpi4py's Allreduce (float32, sum) on the
same sizes and iteration counts, run under the same mpirun. Prints one line per size:
`mpi4py <bytes> <seconds per call>` from rank 0."""
import sys
import time

import numpy as np
from mpi4py import MPI


def main():
    comm = MPI.COMM_WORLD
    sizes = [int(s) for s in sys.argv[1:]]
    for nbytes in sizes:
        n = nbytes // 4
        send = np.random.default_rng(comm.rank).standard_normal(n).astype(np.float32)
        recv = np.empty_like(send)
        iters = max(5, min(1000, (64 << 20) // max(nbytes, 1) // 8))
        for _ in range(3):
            comm.Allreduce(send, recv, op=MPI.SUM)
        comm.Barrier()
        t = time.perf_counter()
        for _ in range(iters):
            comm.Allreduce(send, recv, op=MPI.SUM)
        dt = (time.perf_counter() - t) / iters
        worst = comm.allreduce(dt, op=MPI.MAX)
        if comm.rank == 0:
            print(f"mpi4py {nbytes} {worst:.9f}", flush=True)


if __name__ == "__main__":
    main()
