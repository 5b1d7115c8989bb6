// The string-art rules of imgprep.kernels.stringart as a plain C++ loop, laid out the way
// Tangler's raveler does it (one int vector per ordered pin pair, -1 ended; every chord
// summed every step): the C++ baseline of benchmarks/bench_ravel.py, built there at -O2.
//
// usage: ravel_reference PINS LINES VW < images.u8 (n images of RES*RES bytes, RES given
// as argv[4]); prints per image one line "seconds pin pin ...", the seconds being the
// process CPU time of the greedy loop only (chord tables are built once, before).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <vector>

int main(int argc, char **argv) {
  if (argc != 5) return 2;
  const int k = std::atoi(argv[1]), N = std::atoi(argv[2]), res = std::atoi(argv[4]);
  const double vw = std::strtod(argv[3], nullptr);
  std::vector<int> col(k), row(k);
  for (int q = 0; q < k; ++q) {
    double theta = 2 * M_PI * q / k;
    col[q] = (int)((res - 1) * (0.5 + std::sin(theta) / 2));
    row[q] = (int)((res - 1) * (0.5 + std::cos(theta) / 2));
  }
  std::vector<std::vector<int>> lines(k * k);
  for (int a = 0; a < k; ++a)
    for (int b = a; b < k; ++b) {
      int dx = col[b] - col[a], dy = row[b] - row[a];
      int n = (int)std::sqrt((double)(dx * dx + dy * dy));
      double den = n > 1 ? n - 1 : 1;
      std::vector<int> chord(n + 1, -1);
      for (int s = 0; s < n; ++s)
        chord[s] = res * (int)(row[a] + s * dy / den) + (int)(col[a] + s * dx / den);
      lines[a * k + b] = chord;
      lines[b * k + a] = chord;
    }
  std::vector<unsigned char> bytes(res * res);
  std::vector<int> path(N + 1);
  while (std::fread(bytes.data(), 1, bytes.size(), stdin) == bytes.size()) {
    std::clock_t t0 = std::clock();
    std::vector<double> residual(res * res);
    for (int p = 0; p < res * res; ++p) residual[p] = 1.0 - bytes[p] / 255.0;
    path[0] = 0;
    for (int step = 1; step <= N; ++step) {
      int cur = path[step - 1], pick = -1;
      double best = -INFINITY;
      for (int d = 0; d < k; ++d) {
        if (step >= 2 && d == cur) continue;
        if (step >= 3 && d == path[step - 2]) continue;
        const int *chord = lines[cur * k + d].data();
        double total = 0.0;
        int n = 0;
        for (; chord[n] != -1; ++n) total += residual[chord[n]];
        double score = vw * (2 * total - vw * n);
        if (score > best) {
          best = score;
          pick = d;
        }
      }
      for (const int *p = lines[cur * k + pick].data(); *p != -1; ++p) residual[*p] -= vw;
      path[step] = pick;
    }
    double seconds = double(std::clock() - t0) / CLOCKS_PER_SEC;
    std::printf("%.6f", seconds);
    for (int step = 0; step <= N; ++step) std::printf(" %d", path[step]);
    std::printf("\n");
  }
  return 0;
}
