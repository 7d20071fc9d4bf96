# Drawn by scripts/scaling_figure; data in scaling.dat.
set logscale x 2
set xrange [0.8:320]
set yrange [0:1.1]
set xlabel 'GPUs'
set ylabel 'efficiency (images/s / (GPUs x 1-GPU rate))'
set key bottom left
set grid
set terminal pngcairo size 1260,420 font ',10'
set output 'docs/scaling.png'
set multiplot layout 1,3
set title 'AlexNet'
plot 1 with lines dashtype 2 lc rgb 'gray' title 'linear', \
  'docs/scaling.dat' index 0 with linespoints pt 7 lc rgb 'black' title 'MXNet, published', \
  'docs/scaling.dat' index 1 with linespoints pt 6 lc rgb 'red' title 'MXNet mode, emulated', \
  'docs/scaling.dat' index 2 with linespoints pt 5 lc rgb 'blue' title 'pstrain, emulated'
set title 'Inception-v3'
plot 1 with lines dashtype 2 lc rgb 'gray' title 'linear', \
  'docs/scaling.dat' index 3 with linespoints pt 7 lc rgb 'black' title 'MXNet, published', \
  'docs/scaling.dat' index 4 with linespoints pt 6 lc rgb 'red' title 'MXNet mode, emulated', \
  'docs/scaling.dat' index 5 with linespoints pt 5 lc rgb 'blue' title 'pstrain, emulated'
set title 'ResNet-152'
plot 1 with lines dashtype 2 lc rgb 'gray' title 'linear', \
  'docs/scaling.dat' index 6 with linespoints pt 7 lc rgb 'black' title 'MXNet, published', \
  'docs/scaling.dat' index 7 with linespoints pt 6 lc rgb 'red' title 'MXNet mode, emulated', \
  'docs/scaling.dat' index 8 with linespoints pt 5 lc rgb 'blue' title 'pstrain, emulated'
unset multiplot
set terminal svg size 1260,420
set output 'docs/scaling.svg'
set multiplot layout 1,3
set title 'AlexNet'
plot 1 with lines dashtype 2 lc rgb 'gray' title 'linear', \
  'docs/scaling.dat' index 0 with linespoints pt 7 lc rgb 'black' title 'MXNet, published', \
  'docs/scaling.dat' index 1 with linespoints pt 6 lc rgb 'red' title 'MXNet mode, emulated', \
  'docs/scaling.dat' index 2 with linespoints pt 5 lc rgb 'blue' title 'pstrain, emulated'
set title 'Inception-v3'
plot 1 with lines dashtype 2 lc rgb 'gray' title 'linear', \
  'docs/scaling.dat' index 3 with linespoints pt 7 lc rgb 'black' title 'MXNet, published', \
  'docs/scaling.dat' index 4 with linespoints pt 6 lc rgb 'red' title 'MXNet mode, emulated', \
  'docs/scaling.dat' index 5 with linespoints pt 5 lc rgb 'blue' title 'pstrain, emulated'
set title 'ResNet-152'
plot 1 with lines dashtype 2 lc rgb 'gray' title 'linear', \
  'docs/scaling.dat' index 6 with linespoints pt 7 lc rgb 'black' title 'MXNet, published', \
  'docs/scaling.dat' index 7 with linespoints pt 6 lc rgb 'red' title 'MXNet mode, emulated', \
  'docs/scaling.dat' index 8 with linespoints pt 5 lc rgb 'blue' title 'pstrain, emulated'
unset multiplot
