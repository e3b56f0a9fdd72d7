# Chart of bench/train_vs_torch.py's results (bench/run.sh --plot runs this):
#   gnuplot -e "data='train.dat'; out='DIR'; title='...'" bench/plot_train.gp
# writes DIR/train_samples.png: the median samples/s of pserv train beside PyTorch in one
# process and 2-rank DDP over gloo, with the median seconds to the target accuracy above each
# bar. Columns of data (one line per run kind): 1 label, 2 samples_per_s, 3 time_to_target_s.
if (!exists("data")) data = 'train.dat'
if (!exists("out")) out = '.'
if (!exists("title")) title = 'pserv train vs PyTorch'

set terminal pngcairo size 800,520 enhanced font ',11'
set output out.'/train_samples.png'
set title title
set style data histograms
set style fill solid 0.7 border -1
set boxwidth 0.6
set ylabel 'samples/s (median)'
set yrange [0:*]
set offsets 0, 0, graph 0.12, 0
set grid ytics
unset key
plot data using 2:xtic(1) lc rgb '#3b75af', \
     '' using 0:2:(sprintf('%.0f/s, %.1f s to target', $2, $3)) with labels offset 0,1 notitle
