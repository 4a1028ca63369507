// Image references as Docker reads and writes them (distribution/reference): parsed, checked
// against the grammar, and normalised ("alpine" is docker.io/library/alpine:latest). The one
// place kbuild turns a name a user typed into the name an image is stored under, and the one
// place that says why a name is refused, in Docker's words.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kbuild::image {

struct Reference {
  std::string domain;  // "docker.io" when none was given ("index.docker.io" becomes it too)
  std::string path;    // "library/alpine" for an official image
  std::string tag;     // empty when none was given and there is a digest
  std::string digest;  // "sha256:<64 hex>", or empty

  // domain/path
  std::string name() const;
  // name[:tag][@digest]
  std::string str() const;
  // What Docker shows: without docker.io/ and library/ ("alpine:3.20").
  std::string familiar() const;
};

// Parses `text` as ParseNormalizedNamed does, then adds the tag "latest" when it has neither
// tag nor digest. Throws kbuild::Error (user) with Docker's message: "invalid reference format",
// "invalid reference format: repository name (library/Bad) must be lowercase", ...
Reference parse_reference(std::string_view text);

// parse_reference(text).str(): the name an image is stored under.
std::string normalize_reference(std::string_view text);
// parse_reference(text).familiar().
std::string familiar_reference(std::string_view text);

// What may name an image already stored (rmi, save, tag's source), as ParseAnyReference takes
// it: a 64-hex image ID, a digest ("sha256:<hex>"), or a name parse_reference takes. Throws
// parse_reference's error otherwise.
void check_image_reference(std::string_view text);

// A name for a build's result (`-t`, an output's name=): held to reference.Parse first, as
// buildx checks -t, then to parse_reference, as the image exporter does. Throws
// `invalid tag "TEXT": ...` in their words.
void check_build_tag(std::string_view text);

// docker tag's two names, in the words of docker's client: the source may be an image ID, the
// target must be a name without a digest.
void check_tag_names(std::string_view source, std::string_view target);

// The image names an output's name= gives: for an image or registry output, a comma-separated
// list (empty entries skipped, as the image is stored); for an oci or docker archive, one name;
// none for other outputs.
std::vector<std::string> output_image_names(std::string_view output_type, std::string_view name);

}  // namespace kbuild::image
