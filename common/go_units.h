// Sizes as Docker prints them: go-units' HumanSizeWithPrecision (decimal units, "%.*g"). Each
// command that shows a size (images, du, prune, the classic builder's context line) uses this
// one, so they agree with Docker and with each other.
#pragma once

#include <cstdint>
#include <string>

namespace kbuild {

// units.HumanSizeWithPrecision(bytes, precision): "512B", "2.048kB", "1.235GB" (precision 4,
// units.HumanSize); `docker images` prints with precision 3 ("1.23GB").
std::string go_human_size(double bytes, int precision = 4);

}  // namespace kbuild
