#include "engine/context/context_digest.h"

#include "engine/context/path_filter.h"
#include "engine/patterns/dockerignore.h"

namespace kbuild::context {
namespace {

// archive/tar's typeflag for the entry, as tarsum writes it.
char typeflag(EntryType type) {
  switch (type) {
    case EntryType::regular: return '0';
    case EntryType::symlink: return '2';
    case EntryType::directory: return '5';
    case EntryType::fifo: return '6';
  }
  return '0';
}

void field(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(value);
  out.push_back('\0');  // tarsum concatenates without a separator; a NUL keeps fields apart
}

}  // namespace

store::Digest entry_digest(const Entry& e) {
  // The v1 tarsum header fields in their order, without name and mtime.
  std::string text = "kbuild-context-entry-v1\n";
  const std::uint32_t mode = e.type == EntryType::symlink ? 0777 : e.mode;
  field(text, "mode", std::to_string(mode));
  field(text, "uid", std::to_string(e.uid));
  field(text, "gid", std::to_string(e.gid));
  field(text, "size", std::to_string(e.type == EntryType::regular ? e.size : 0));
  field(text, "typeflag", std::string(1, typeflag(e.type)));
  field(text, "linkname", e.type == EntryType::symlink ? e.link_target : std::string());
  if (e.type == EntryType::regular) field(text, "content", e.digest.str());
  return store::Digest::of(text);
}

store::Digest selection_digest(const Manifest& manifest, const Selection& selection) {
  std::string text;
  for (const std::string& p : selection.exclude_patterns) {
    text += p;
    text += '\n';
  }
  const patterns::IgnoreMatcher ignore(patterns::parse_dockerignore(text));
  const PathFilter filter(selection.include_patterns, &ignore);
  const std::vector<bool> kept = select_entries(manifest.entries(), filter, false);
  store::Sha256 hasher;
  hasher.update("kbuild-context-selection-v1\n");
  bool any = false;
  for (std::size_t i = 0; i < kept.size(); ++i) {
    if (!kept[i]) continue;
    any = true;
    const Entry& e = manifest.entries()[i];
    hasher.update(e.path);
    hasher.update(std::string_view("\0", 1));
    hasher.update(entry_digest(e).hex());
    hasher.update("\n");
  }
  return any ? hasher.finish() : store::Digest::of("");
}

}  // namespace kbuild::context
