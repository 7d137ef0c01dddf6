int hv_bench_placeholder(void){return 0;}
