// Go's path.Clean: the lexically shortest equivalent of a slash-separated path. Dockerfile
// paths, .dockerignore patterns and context paths are all cleaned this way by BuildKit.
#pragma once

#include <string>
#include <string_view>

namespace kbuild {

std::string go_clean_path(std::string_view path);
// Go's path.Base: the last element, trailing slashes removed; "." for "", "/" for slashes only.
std::string go_path_base(std::string_view path);

}  // namespace kbuild
