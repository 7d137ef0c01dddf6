int hv_bench_placeholder(void);
