#include "bench/collectives/png_plot.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"

namespace plexus::collectives::bench {
namespace {

// 5x7 glyphs, one byte per row, bit 4 = leftmost column. Upper case only:
// lower case is drawn as upper case.
struct Glyph {
  char c;
  uint8_t rows[7];
};
constexpr Glyph kFont[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}},
    {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}},
    {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}},
    {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}},
    {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}},
    {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}},
    {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}},
    {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}},
    {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}},
    {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}},
    {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}},
    {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}},
    {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}},
    {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}},
    {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}},
    {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
    {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}},
    {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
    {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'[', {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E}},
    {']', {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E}},
    {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
    {'*', {0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00}},
    {'<', {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}},
    {'>', {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
};

class Canvas {
 public:
  Canvas(int w, int h) : w_(w), h_(h), px_(static_cast<size_t>(w) * h * 3) {
    std::fill(px_.begin(), px_.end(), 0xFF);
  }
  int width() const { return w_; }
  int height() const { return h_; }

  void Set(int x, int y, uint32_t rgb) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
    uint8_t* p = &px_[(static_cast<size_t>(y) * w_ + x) * 3];
    p[0] = rgb >> 16;
    p[1] = (rgb >> 8) & 0xFF;
    p[2] = rgb & 0xFF;
  }
  // Bresenham, `thick` pixels wide; dashed when dash > 0 (on/off pixels).
  void Line(int x0, int y0, int x1, int y1, uint32_t rgb, int thick = 1,
            int dash = 0) {
    int dx = std::abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
    int dy = -std::abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (int i = 0;; ++i) {
      if (dash == 0 || (i / dash) % 2 == 0) {
        for (int a = -(thick / 2); a <= thick / 2 - (thick % 2 == 0); ++a) {
          for (int b = -(thick / 2); b <= thick / 2 - (thick % 2 == 0); ++b) {
            Set(x0 + a, y0 + b, rgb);
          }
        }
      }
      if (x0 == x1 && y0 == y1) break;
      int e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }
  void Rect(int x0, int y0, int x1, int y1, uint32_t rgb) {
    for (int y = y0; y <= y1; ++y) {
      for (int x = x0; x <= x1; ++x) Set(x, y, rgb);
    }
  }
  // Text with its top-left corner at (x, y), each font pixel `scale` wide.
  // vertical: rotated 90 degrees counter-clockwise, reading bottom-up from
  // (x, y) being the bottom-left corner.
  void Text(int x, int y, const std::string& s, uint32_t rgb, int scale = 1,
            bool vertical = false) {
    for (size_t i = 0; i < s.size(); ++i) {
      const char c =
          static_cast<char>(std::toupper(static_cast<unsigned char>(s[i])));
      const Glyph* g = nullptr;
      for (const Glyph& f : kFont) {
        if (f.c == c) g = &f;
      }
      if (g == nullptr) continue;  // space and unknown characters
      const int off = static_cast<int>(i) * 6 * scale;
      for (int r = 0; r < 7; ++r) {
        for (int col = 0; col < 5; ++col) {
          if (!(g->rows[r] & (0x10 >> col))) continue;
          for (int a = 0; a < scale; ++a) {
            for (int b = 0; b < scale; ++b) {
              if (vertical) {
                Set(x + r * scale + a, y - off - col * scale - b, rgb);
              } else {
                Set(x + off + col * scale + a, y + r * scale + b, rgb);
              }
            }
          }
        }
      }
    }
  }
  static int TextWidth(const std::string& s, int scale = 1) {
    return static_cast<int>(s.size()) * 6 * scale;
  }

  absl::Status WritePng(const std::string& path) const {
    // Raw scanlines, each prefixed by filter type 0 (none).
    std::vector<uint8_t> raw;
    raw.reserve(static_cast<size_t>(h_) * (w_ * 3 + 1));
    for (int y = 0; y < h_; ++y) {
      raw.push_back(0);
      const uint8_t* row = &px_[static_cast<size_t>(y) * w_ * 3];
      raw.insert(raw.end(), row, row + w_ * 3);
    }
    uLongf zlen = compressBound(raw.size());
    std::vector<uint8_t> z(zlen);
    if (compress2(z.data(), &zlen, raw.data(), raw.size(), 9) != Z_OK) {
      return absl::InternalError("zlib compress2 failed");
    }
    z.resize(zlen);
    std::string out("\x89PNG\r\n\x1a\n", 8);
    auto be32 = [](std::string* o, uint32_t v) {
      for (int s = 24; s >= 0; s -= 8) o->push_back(static_cast<char>(v >> s));
    };
    auto chunk = [&](const char* type, const uint8_t* data, size_t len) {
      be32(&out, static_cast<uint32_t>(len));
      const size_t start = out.size();
      out.append(type, 4);
      out.append(reinterpret_cast<const char*>(data), len);
      uLong crc = crc32(0, reinterpret_cast<const Bytef*>(&out[start]),
                        static_cast<uInt>(len + 4));
      be32(&out, static_cast<uint32_t>(crc));
    };
    std::string ihdr;
    be32(&ihdr, w_);
    be32(&ihdr, h_);
    ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB
    chunk("IHDR", reinterpret_cast<const uint8_t*>(ihdr.data()), ihdr.size());
    chunk("IDAT", z.data(), z.size());
    chunk("IEND", nullptr, 0);
    FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
    }
    const bool ok = std::fwrite(out.data(), 1, out.size(), f) == out.size();
    if (std::fclose(f) != 0 || !ok) {
      return absl::DataLossError(absl::StrCat("short write to ", path));
    }
    return absl::OkStatus();
  }

 private:
  int w_, h_;
  std::vector<uint8_t> px_;
};

std::string SizeLabel(double bytes) {
  if (bytes >= (1 << 30)) return absl::StrCat(bytes / (1 << 30), "G");
  if (bytes >= (1 << 20)) return absl::StrCat(bytes / (1 << 20), "M");
  if (bytes >= (1 << 10)) return absl::StrCat(bytes / (1 << 10), "K");
  return absl::StrCat(bytes);
}

std::string PowerOfTenLabel(int e) {
  if (e >= 0) return absl::StrCat(std::pow(10.0, e));
  return absl::StrFormat("%.*f", -e, std::pow(10.0, e));
}

}  // namespace

absl::Status WritePlotPng(const PlotSpec& spec, const std::string& path) {
  Canvas c(spec.width, spec.height);
  const int left = 80, right = 230, top = 40, bottom = 60;
  const int x0 = left, x1 = spec.width - right;
  const int y0 = spec.height - bottom, y1 = top;

  double xmin = 1e300, xmax = 0, ymin = 1e300, ymax = 0;
  for (const PlotSeries& s : spec.series) {
    for (auto [x, y] : s.points) {
      if (x <= 0 || y <= 0) continue;
      xmin = std::min(xmin, x);
      xmax = std::max(xmax, x);
      ymin = std::min(ymin, y);
      ymax = std::max(ymax, y);
    }
  }
  for (const PlotLimit& l : spec.limits) {
    if (l.y > 0) ymax = std::max(ymax, l.y);
  }
  if (xmax == 0) {
    xmin = 1;
    xmax = 2;
  }
  if (ymax == 0) {
    ymin = 0.1;
    ymax = 1;
  }
  const double lx0 = std::floor(std::log2(xmin)),
               lx1 = std::max(lx0 + 1, std::ceil(std::log2(xmax)));
  const int ly0 = static_cast<int>(std::floor(std::log10(ymin)));
  const int ly1 =
      std::max(ly0 + 1, static_cast<int>(std::ceil(std::log10(ymax))));
  auto px = [&](double x) {
    return static_cast<int>(
        std::lround(x0 + (std::log2(x) - lx0) / (lx1 - lx0) * (x1 - x0)));
  };
  auto py = [&](double y) {
    return static_cast<int>(
        std::lround(y0 - (std::log10(y) - ly0) /
                             static_cast<double>(ly1 - ly0) * (y0 - y1)));
  };

  // Grid, ticks and labels.
  const uint32_t grid = 0xE0E0E0, axis = 0x000000;
  for (int e = ly0; e <= ly1; ++e) {
    const int y = py(std::pow(10.0, e));
    c.Line(x0, y, x1, y, grid);
    const std::string l = PowerOfTenLabel(e);
    c.Text(x0 - 8 - Canvas::TextWidth(l), y - 3, l, axis);
  }
  for (int e = static_cast<int>(lx0); e <= static_cast<int>(lx1); ++e) {
    const int x = px(std::ldexp(1.0, e));
    if (e % 2 == 0) {
      c.Line(x, y0, x, y1, grid);
      const std::string l = SizeLabel(std::ldexp(1.0, e));
      c.Text(x - Canvas::TextWidth(l) / 2, y0 + 8, l, axis);
    }
    c.Line(x, y0, x, y0 + 4, axis);
  }
  c.Line(x0, y0, x1, y0, axis);
  c.Line(x0, y0, x0, y1, axis);
  c.Text(x0, 12, spec.title, axis, 2);
  c.Text((x0 + x1) / 2 - Canvas::TextWidth(spec.x_label) / 2, spec.height - 28,
         spec.x_label, axis);
  c.Text(16, (y0 + y1) / 2 + Canvas::TextWidth(spec.y_label) / 2, spec.y_label,
         axis, 1, /*vertical=*/true);

  // Limits (dashed), then series (thick), legend on the right.
  int ly = y1 + 4;
  for (const PlotLimit& l : spec.limits) {
    if (l.y <= 0) continue;
    const int y = py(l.y);
    c.Line(x0, y, x1, y, l.rgb, 1, 6);
    c.Line(x1 + 12, ly + 3, x1 + 36, ly + 3, l.rgb, 1, 4);
    c.Text(x1 + 42, ly, l.label, l.rgb);
    ly += 14;
  }
  ly += 6;
  for (const PlotSeries& s : spec.series) {
    bool have = false;
    int lastx = 0, lasty = 0;
    for (auto [x, y] : s.points) {
      if (x <= 0 || y <= 0) continue;
      const int cx = px(x), cy = py(y);
      if (have) c.Line(lastx, lasty, cx, cy, s.rgb, 2);
      c.Rect(cx - 2, cy - 2, cx + 2, cy + 2, s.rgb);
      have = true;
      lastx = cx;
      lasty = cy;
    }
    c.Line(x1 + 12, ly + 3, x1 + 36, ly + 3, s.rgb, 2);
    c.Text(x1 + 42, ly, s.label, s.rgb);
    ly += 14;
  }
  return c.WritePng(path);
}

}  // namespace plexus::collectives::bench
