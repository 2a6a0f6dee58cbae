# bench/plot.gp: the charts of a bench/run compare run. Called by bench/run as
#   gnuplot -e "raw='RESULTS/raw'; out='RESULTS'" bench/plot.gp
# Left: latency by percentile (HdrHistogram's percentile spectrum: x is 1/(1-p) on a log axis, so
# 90%, 99%, 99.9% are evenly spaced). Right: answers and fills per second over the runs.
if (!exists("raw")) raw = 'bench/results/raw'
if (!exists("out")) out = 'bench/results'

set terminal pngcairo size 1400,680 font "DejaVu Sans,10" noenhanced
set output out.'/performance.png'
set multiplot layout 1,2

set title "Latency by percentile (x: percentile; same machine, same run)"
set logscale x
set logscale y
set xrange [1:100000]
set xtics ("50%%" 2, "90%%" 10, "99%%" 100, "99.9%%" 1000, "99.99%%" 10000, "99.999%%" 100000)
set ylabel "latency, ms (log)"
unset xlabel
set grid xtics ytics mytics
set key below left Left reverse vertical maxrows 5
plot raw.'/spec-brokerd-closed.dat' using 1:2 with lines lw 2 title "brokerd PlaceTrade ack, closed loop (peak)", \
     raw.'/spec-brokerd-half.dat' using 1:2 with lines lw 2 title "brokerd PlaceTrade ack, open loop at half of peak", \
     raw.'/spec-brokerd-e2e.dat' using 1:2 with lines lw 2 dt 2 title "brokerd placement -> FILLED on /v1/stream, open loop at half", \
     raw.'/spec-nginx.dat' using 1:2 with lines lw 2 title "nginx fixed JSON, closed loop", \
     raw.'/spec-pg-place.dat' using 1:2 with lines lw 2 title "PostgreSQL seeds' PlaceTrade txn (pgbench)"
unset logscale x
unset logscale y
set autoscale x
set autoscale y
set yrange [0:*]
set xtics autofreq
set mytics default
set title "Throughput over time (x: seconds into each load phase)"
unset xlabel
set ylabel "per second"
set key below left Left reverse vertical maxrows 5
plot raw.'/timeline.dat' using 1:2 with lines lw 2 title "brokerd acks/s, closed loop (peak)", \
     raw.'/timeline.dat' using 1:3 with lines lw 2 title "brokerd acks/s, open loop at half of peak", \
     raw.'/timeline.dat' using 1:4 with lines lw 2 title "brokerd acks/s, closed loop with streams", \
     raw.'/timeline.dat' using 1:5 with lines lw 2 dt 2 title "FILLED/s received on the streams, same run"
unset multiplot
