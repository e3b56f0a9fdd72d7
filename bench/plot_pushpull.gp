# Charts of pserv_bench_pushpull's --table file (bench/run.sh --plot runs this):
#   gnuplot -e "data='pushpull.dat'; out='DIR'; title='...'" bench/plot_pushpull.gp
# writes DIR/pushpull_goodput.png (ping-pong goodput, both ways: pserv beside the raw UCX echo),
# DIR/pushpull_oneway.png (one way: pserv's push-pull beside UCX streaming, raw echo and
# ucx_perftest ucp_am_bw) and DIR/pushpull_latency.png (median round trips).
# Columns (see the file's header): 1 bytes, 2 raw_p50_us, 3 pserv_p50_us, 4 raw_GBps_2way,
# 5 pserv_GBps_2way, 6 pserv_GBps_1way, 7 raw_stream_GBps, 8 perftest_bw_GBps,
# 9 perftest_tcp_bw_GBps, 10 perftest_rt_us, 11 perftest_tcp_rt_us, 12 time_ratio, 13 goodput_ratio.
if (!exists("data")) data = 'pushpull.dat'
if (!exists("out")) out = '.'
if (!exists("title")) title = 'pserv push-pull vs raw UCX'

set datafile missing '-'
set terminal pngcairo size 1000,620 enhanced font ',11'
set logscale x 2
set xtics ('8' 8, '64' 64, '512' 512, '4K' 4096, '16K' 16384, '64K' 65536, '256K' 262144, \
           '1M' 1048576, '4M' 4194304, '16M' 16777216, '64M' 67108864)
set format y '%g'
set xlabel 'message size (bytes per direction)'
set key top left
set grid
set style data linespoints
set offsets graph 0.03, graph 0.03, 0, 0

set output out.'/pushpull_goodput.png'
set title title.': round trip goodput, both directions'
set ylabel 'GB/s (2 x bytes / median round trip)'
set logscale y 10
plot data using 1:4 title 'raw UCX AM echo' lw 2 pt 7, \
     data using 1:5 title 'pserv push-pull (SGD on the server)' lw 2 pt 5

set output out.'/pushpull_oneway.png'
set title title.': one-way goodput'
set ylabel 'GB/s one way'
plot data using 1:6 title 'pserv push-pull (bytes / median round trip)' lw 2 pt 5, \
     data using 1:7 title 'raw UCX AM stream (32 in flight)' lw 2 pt 7, \
     data using 1:8 title 'ucx\_perftest ucp\_am\_bw' lw 1 pt 9, \
     data using 1:9 title 'ucx\_perftest ucp\_am\_bw, UCX\_TLS=tcp' lw 1 pt 11

set output out.'/pushpull_latency.png'
set title title.': median round trip'
set ylabel 'microseconds'
set key top left
plot data using 1:2 title 'raw UCX AM echo' lw 2 pt 7, \
     data using 1:3 title 'pserv push-pull' lw 2 pt 5, \
     data using 1:10 title 'ucx\_perftest ucp\_am\_lat (2 x one way)' lw 1 pt 9, \
     data using 1:11 title 'ucx\_perftest ucp\_am\_lat, UCX\_TLS=tcp' lw 1 pt 11
