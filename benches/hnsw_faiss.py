"""faiss-cpu's HNSW and flat index on the vectors `runtime/examples/hnsw_recall.rs` wrote
(same m, ef_construction and ef_search values, one thread), for benches/README.md."""
import os
import sys
import time

import numpy as np

try:
    import faiss
except ImportError:
    print("hnsw_faiss: faiss-cpu is not installed (pip install faiss-cpu); skipped")
    sys.exit(0)

out = sys.argv[1] if len(sys.argv) > 1 else "target/hnsw"
base = np.load(os.path.join(out, "base.npy"))
qs = np.load(os.path.join(out, "queries.npy"))
n, d = base.shape
k = 10
faiss.omp_set_num_threads(1)
flat = faiss.IndexFlatIP(d)
flat.add(base)
t = time.time()
_, truth = flat.search(qs, k)
print(f"faiss {faiss.__version__} flat: {(time.time() - t) * 1e3 / len(qs):.3f} ms/query")
ix = faiss.IndexHNSWFlat(d, 16, faiss.METRIC_INNER_PRODUCT)
ix.hnsw.efConstruction = 100
t = time.time()
ix.add(base)
print(f"faiss hnsw build: {n} x {d}, m=16 ef_construction=100: {time.time() - t:.1f} s")
for ef in [64, 128, 256, 512, 800, 1200]:
    ix.hnsw.efSearch = ef
    t = time.time()
    # One query at a time, as the oar loop searches.
    got = [ix.search(qs[i : i + 1], k)[1][0] for i in range(len(qs))]
    ms = (time.time() - t) * 1e3 / len(qs)
    recall = np.mean([len(set(g) & set(w)) / k for g, w in zip(got, truth)])
    print(f"faiss hnsw ef_search={ef:>4}: recall@{k} {recall:.3f}, {ms:.3f} ms/query")
