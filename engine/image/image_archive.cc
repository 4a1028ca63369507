#include "engine/image/image_archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <cerrno>
#include <exception>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/syscall.h"
#include "engine/image/go_json.h"
#include "engine/image/go_tar.h"
#include "engine/image/layer_tar.h"

namespace kbuild::image {
namespace {

constexpr size_t kDocumentLimit = 20 << 20;  // containerd's limit on JSON files in an archive
constexpr size_t kKeepBlobLimit = 1 << 20;    // blobs this small that look like JSON are checked
constexpr size_t kKeepTotalLimit = 64 << 20;
constexpr std::string_view kLayoutVersion = "1.0.0";

// containerd's ociReferenceName: the tag, or the whole reference when there is none.
std::string oci_ref_name(const std::string& normalized) {
  Reference r = parse_reference(normalized);
  return r.tag.empty() ? normalized : r.tag;
}

std::string blob_path(const store::Digest& digest) { return "blobs/sha256/" + std::string(digest.hex()); }

struct ReadDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

// The archive's tar as containerd's exporter writes it: owner 0, the zero time.
class TarWriter {
 public:
  explicit TarWriter(ByteSink& out) : tar_(out) {}

  void directory(const std::string& name) {
    TarHeader h;
    h.name = name;
    h.type = TarHeader::directory;
    h.mode = 0755;
    tar_.write_header(h);
  }

  void begin_file(const std::string& name, int64_t mode, int64_t size) {
    TarHeader h;
    h.name = name;
    h.mode = mode;
    h.size = size;
    tar_.write_header(h);
  }

  void data(const void* bytes, size_t size) { tar_.write(bytes, size); }

  void file(const std::string& name, int64_t mode, std::string_view content) {
    begin_file(name, mode, static_cast<int64_t>(content.size()));
    data(content.data(), content.size());
  }

  void close() { tar_.close(); }

 private:
  GoTarWriter tar_;
};

std::string read_document(BlobSource& blobs, const Descriptor& d) {
  UniqueFd fd = blobs.open(d.digest);
  std::string bytes = read_small(fd.get(), kDocumentLimit, d.digest.str());
  if (store::Digest::of(bytes) != d.digest || static_cast<int64_t>(bytes.size()) != d.size) {
    throw Error(ErrorKind::internal, "blob " + d.digest.str() + " does not match its descriptor");
  }
  return bytes;
}

bool platform_matches(const std::optional<Platform>& have, const Platform& want) {
  return have && have->os == want.os && have->architecture == want.architecture &&
         (want.variant.empty() || have->variant == want.variant);
}

// Everything one archive holds, gathered before the first byte is written so entries can go out
// sorted.
class ArchivePlan {
 public:
  ArchivePlan(BlobSource& blobs, const ArchiveWriteOptions& options) : blobs_(blobs), options_(options) {}

  void add(const ArchiveImage& image) {
    std::optional<Manifest> chosen = walk(image.target, true);
    std::vector<std::string> normalized;
    for (const auto& name : image.names) normalized.push_back(normalize_reference(name));
    if (normalized.empty()) {
      index_.manifests.push_back(image.target);
    }
    for (const auto& name : normalized) {
      Descriptor d = image.target;
      d.annotations[std::string(annotation::image_name)] = name;
      d.annotations[std::string(annotation::ref_name)] = oci_ref_name(name);
      index_.manifests.push_back(std::move(d));
    }
    if (options_.format != ArchiveFormat::docker || !chosen) return;
    DockerArchiveEntry entry;
    entry.config = blob_path(chosen->config.digest);
    for (const auto& layer : chosen->layers) entry.layers.push_back(blob_path(layer.digest));
    ImageConfig config = parse_config(read_document(blobs_, chosen->config));
    for (const auto& name : normalized) {
      std::string familiar = familiar_reference(name);
      entry.repo_tags.push_back(familiar);
      Reference r = parse_reference(name);
      if (!r.tag.empty() && !config.rootfs.diff_ids.empty()) {
        // Docker 25's `docker save`: the top layer's diff_id, keyed by familiar name and tag.
        std::string repo = familiar.substr(0, familiar.size() - r.tag.size() - 1);
        repositories_[repo][r.tag] = std::string(config.rootfs.diff_ids.back().hex());
      }
    }
    docker_entries_.push_back(std::move(entry));
  }

  void write(ByteSink& out) {
    TarWriter tar(out);
    index_.media_type = media_type::oci_index;
    std::map<std::string, std::string> files;  // name -> content, for the small documents
    files["index.json"] = serialize_index(index_, JsonStyle::compact);
    files["oci-layout"] = R"({"imageLayoutVersion":")" + std::string(kLayoutVersion) + R"("})";
    if (options_.format == ArchiveFormat::docker) {
      files["manifest.json"] = serialize_docker_archive_manifest(docker_entries_);
      if (!repositories_.empty()) {
        nlohmann::ordered_json repos = nlohmann::ordered_json::object();
        for (const auto& [repo, tags] : repositories_) {
          nlohmann::ordered_json t = nlohmann::ordered_json::object();
          for (const auto& [tag, id] : tags) t[tag] = id;
          repos[repo] = std::move(t);
        }
        files["repositories"] = go_marshal(repos) + "\n";  // json.Encoder ends with a newline
      }
    }
    // Sorted as containerd sorts its records: "blobs/" < "blobs/sha256/" < "blobs/sha256/..." <
    // "index.json" < "manifest.json" < "oci-layout" < "repositories".
    tar.directory("blobs/");
    tar.directory("blobs/sha256/");
    for (const auto& [digest, size] : blobs_to_write_) copy_blob(tar, digest, size);
    for (const auto& [name, content] : files) {
      tar.file(name, name == "oci-layout" ? 0444 : 0644, content);
    }
    tar.close();
  }

 private:
  // Adds `d` and all it reaches; returns the manifest to name in manifest.json.
  std::optional<Manifest> walk(const Descriptor& d, bool top) {
    add_blob(d);
    if (is_index_type(d.media_type)) {
      Index index = parse_index(read_document(blobs_, d));
      std::optional<Manifest> chosen;
      for (const auto& child : index.manifests) {
        std::optional<Manifest> m = walk(child, false);
        bool wanted = options_.platform ? platform_matches(child.platform, *options_.platform)
                                        : !(child.platform && child.platform->os == "unknown");
        if (!chosen && m && wanted) chosen = std::move(m);
      }
      return top ? chosen : std::nullopt;
    }
    if (is_manifest_type(d.media_type)) {
      Manifest m = parse_manifest(read_document(blobs_, d));
      add_blob(m.config);
      for (const auto& layer : m.layers) add_blob(layer);
      return m;
    }
    return std::nullopt;
  }

  void add_blob(const Descriptor& d) {
    auto [it, added] = blobs_to_write_.emplace(d.digest, d.size);
    if (!added && it->second != d.size) {
      throw Error(ErrorKind::internal, "blob " + d.digest.str() + " has two sizes in the image's descriptors");
    }
  }

  void copy_blob(TarWriter& tar, const store::Digest& digest, int64_t size) {
    std::string name = blob_path(digest);
    UniqueFd fd = blobs_.open(digest);
    tar.begin_file(name, 0444, size);
    store::Sha256 hash;
    std::vector<char> buffer(1 << 20);
    int64_t copied = 0;
    for (;;) {
      size_t n = read_some(fd.get(), buffer.data(), buffer.size(), digest.str());
      if (n == 0) break;
      copied += static_cast<int64_t>(n);
      if (copied > size) break;
      hash.update(buffer.data(), n);
      tar.data(buffer.data(), n);
    }
    if (copied != size || hash.finish() != digest) {
      throw Error(ErrorKind::internal, "blob " + digest.str() + " does not match its digest or size");
    }
  }

  BlobSource& blobs_;
  const ArchiveWriteOptions& options_;
  Index index_;
  std::map<store::Digest, int64_t> blobs_to_write_;
  std::vector<DockerArchiveEntry> docker_entries_;
  std::map<std::string, std::map<std::string, std::string>> repositories_;
};

// --- reading ------------------------------------------------------------------------------

struct ArchiveFile {
  store::Digest digest;
  int64_t size = 0;
  Compression compression = Compression::none;
};

std::string clean_name(std::string_view name) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= name.size()) {
    size_t slash = name.find('/', i);
    if (slash == std::string_view::npos) slash = name.size();
    std::string_view part = name.substr(i, slash - i);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.emplace_back(part);
    }
    i = slash + 1;
  }
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : "/") + p;
  return out;
}

Compression detect_compression(const unsigned char* head, size_t size) {
  if (size >= 3 && head[0] == 0x1f && head[1] == 0x8b && head[2] == 0x08) return Compression::gzip;
  if (size >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd) return Compression::zstd;
  return Compression::none;
}

std::optional<store::Digest> digest_from_path(const std::string& name) {
  constexpr std::string_view prefix = "blobs/sha256/";
  if (!name.starts_with(prefix) || name.size() != prefix.size() + 64) return std::nullopt;
  try {
    return store::Digest::from_hex(std::string_view(name).substr(prefix.size()));
  } catch (const Error&) {
    return std::nullopt;
  }
}

class ArchiveReader {
 public:
  ArchiveReader(int fd, BlobSink& sink, int cancel_fd)
      : input_(fd, ClientStream::Direction::read, cancel_fd, "image archive"), sink_(sink), buffer_(1 << 20) {}

  ImportResult read() {
    std::unique_ptr<struct archive, ReadDeleter> a(archive_read_new());
    if (!a) throw Error(ErrorKind::internal, "libarchive: out of memory");
    archive_read_support_filter_gzip(a.get());
    archive_read_support_filter_zstd(a.get());
    archive_read_support_format_tar(a.get());
    check_rc(a.get(), archive_read_open2(a.get(), this, nullptr, &ArchiveReader::on_read, nullptr, nullptr));
    for (;;) {
      archive_entry* entry = nullptr;
      int rc = archive_read_next_header(a.get(), &entry);
      if (rc == ARCHIVE_EOF) break;
      check_rc(a.get(), rc);
      const char* raw = archive_entry_pathname(entry);
      std::string name = clean_name(raw ? raw : "");
      if (archive_entry_filetype(entry) == AE_IFLNK) {
        const char* target = archive_entry_symlink(entry);
        std::string dir = name.substr(0, name.rfind('/') == std::string::npos ? 0 : name.rfind('/'));
        symlinks_[name] = clean_name(dir + "/" + (target ? target : ""));
        continue;
      }
      if (archive_entry_filetype(entry) != AE_IFREG) continue;
      try {
        read_file(a.get(), name);
      } catch (const Error& e) {
        throw e.with_context("reading image archive entry " + name);
      }
    }
    for (const auto& [name, target] : symlinks_) {
      auto it = files_.find(target);
      if (it != files_.end()) files_[name] = it->second;
    }
    if (documents_.count("oci-layout")) return read_layout();
    if (documents_.count("manifest.json")) return read_docker_archive();
    throw Error(ErrorKind::user, "not an image archive: it has neither oci-layout nor manifest.json");
  }

 private:
  static la_ssize_t on_read(struct archive* a, void* self, const void** data) {
    auto* reader = static_cast<ArchiveReader*>(self);
    try {
      size_t n = reader->input_.read_some(reader->buffer_.data(), reader->buffer_.size());
      *data = reader->buffer_.data();
      return static_cast<la_ssize_t>(n);
    } catch (...) {
      reader->error_ = std::current_exception();
      archive_set_error(a, EIO, "read failed");
      return -1;
    }
  }

  void check_rc(struct archive* a, int rc) {
    if (rc == ARCHIVE_OK || rc == ARCHIVE_WARN) return;
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    const char* message = archive_error_string(a);
    throw Error(ErrorKind::user, std::string("malformed image archive: ") + (message ? message : "unreadable"));
  }

  void read_file(struct archive* a, const std::string& name) {
    bool document = name == "oci-layout" || name == "index.json" || name == "manifest.json" || name == "repositories";
    std::unique_ptr<BlobWriter> writer = document ? nullptr : sink_.writer();
    std::string kept;
    bool keep = document;
    int64_t size = 0;
    unsigned char head[4] = {};
    size_t head_size = 0;
    const void* block = nullptr;
    size_t n = 0;
    la_int64_t offset = 0;
    for (;;) {
      int rc = archive_read_data_block(a, &block, &n, &offset);
      if (rc == ARCHIVE_EOF) break;
      check_rc(a, rc);
      if (offset != size) throw Error(ErrorKind::user, "sparse files are not image content");
      const char* p = static_cast<const char*>(block);
      for (size_t i = 0; head_size < sizeof head && i < n; ++i) head[head_size++] = static_cast<unsigned char>(p[i]);
      if (size == 0 && !document) keep = n > 0 && p[0] == '{' && kept_total_ < kKeepTotalLimit;
      size += static_cast<int64_t>(n);
      if (keep) {
        size_t limit = document ? kDocumentLimit : kKeepBlobLimit;
        if (kept.size() + n > limit) {
          if (document) throw Error(ErrorKind::user, "larger than " + std::to_string(limit) + " bytes");
          keep = false;
          kept.clear();
        } else {
          kept.append(p, n);
        }
      }
      if (writer) writer->write(p, n);
    }
    if (document) {
      documents_[name] = std::move(kept);
      return;
    }
    ArchiveFile file;
    file.digest = writer->commit(digest_from_path(name));
    file.size = size;
    file.compression = detect_compression(head, head_size);
    if (keep) {
      kept_total_ += kept.size();
      kept_[file.digest] = std::move(kept);
    }
    seen_.insert(file.digest);
    files_[name] = file;
  }

  // Checks what can be checked of a manifest that came with the archive: its config and layers
  // came too.
  void check_complete(const Descriptor& d) {
    if (!seen_.count(d.digest)) throw Error(ErrorKind::user, "image archive lacks blob " + d.digest.str());
    auto it = kept_.find(d.digest);
    if (it == kept_.end()) return;
    if (is_manifest_type(d.media_type)) {
      Manifest m = parse_manifest(it->second);
      if (!seen_.count(m.config.digest)) throw Error(ErrorKind::user, "image archive lacks config " + m.config.digest.str());
      for (const auto& layer : m.layers) {
        if (!seen_.count(layer.digest)) throw Error(ErrorKind::user, "image archive lacks layer " + layer.digest.str());
      }
    } else if (is_index_type(d.media_type)) {
      // An index may name platforms the archive left out (containerd exports one platform).
      Index index = parse_index(it->second);
      for (const auto& child : index.manifests) {
        if (seen_.count(child.digest)) check_complete(child);
      }
    }
  }

  ImportResult read_layout() {
    nlohmann::json layout;
    try {
      layout = nlohmann::json::parse(documents_["oci-layout"]);
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorKind::user, std::string("invalid oci-layout: ") + e.what());
    }
    if (!layout.is_object() || layout.value("imageLayoutVersion", "") != kLayoutVersion) {
      throw Error(ErrorKind::user, "unsupported OCI layout version in oci-layout");
    }
    auto index_it = documents_.find("index.json");
    if (index_it == documents_.end()) throw Error(ErrorKind::user, "OCI layout without index.json");
    Index index = parse_index(index_it->second);
    ImportResult result;
    result.format = ArchiveFormat::oci;
    std::map<store::Digest, size_t> by_digest;
    for (const auto& d : index.manifests) {
      check_complete(d);
      std::string name;
      if (auto it = d.annotations.find(std::string(annotation::image_name)); it != d.annotations.end()) {
        name = it->second;
      } else if (auto ref = d.annotations.find(std::string(annotation::ref_name)); ref != d.annotations.end()) {
        name = ref->second;
      }
      auto [pos, added] = by_digest.emplace(d.digest, result.images.size());
      if (added) {
        ImportedImage image;
        image.target = d;
        image.target.annotations.erase(std::string(annotation::image_name));
        image.target.annotations.erase(std::string(annotation::ref_name));
        result.images.push_back(std::move(image));
      }
      if (!name.empty()) result.images[pos->second].names.push_back(name);
    }
    return result;
  }

  ImportResult read_docker_archive() {
    ImportResult result;
    result.format = ArchiveFormat::docker;
    for (const auto& entry : parse_docker_archive_manifest(documents_["manifest.json"])) {
      auto config = files_.find(clean_name(entry.config));
      if (config == files_.end()) throw Error(ErrorKind::user, "image archive lacks config " + entry.config);
      Manifest m;
      m.media_type = media_type::docker_manifest;
      m.config.media_type = media_type::docker_config;
      m.config.digest = config->second.digest;
      m.config.size = config->second.size;
      for (const auto& path : entry.layers) {
        auto layer = files_.find(clean_name(path));
        if (layer == files_.end()) throw Error(ErrorKind::user, "image archive lacks layer " + path);
        Descriptor d;
        d.media_type = layer->second.compression == Compression::zstd
                           ? std::string(media_type::oci_layer_zstd)
                           : layer_media_type(layer->second.compression, false);
        d.digest = layer->second.digest;
        d.size = layer->second.size;
        m.layers.push_back(std::move(d));
      }
      std::string bytes = serialize_manifest(m);
      std::unique_ptr<BlobWriter> writer = sink_.writer();
      writer->write(bytes.data(), bytes.size());
      ImportedImage image;
      image.target.media_type = media_type::docker_manifest;
      image.target.digest = writer->commit(store::Digest::of(bytes));
      image.target.size = static_cast<int64_t>(bytes.size());
      if (auto kept = kept_.find(m.config.digest); kept != kept_.end()) {
        ImageConfig c = parse_config(kept->second);
        if (!c.os.empty()) image.target.platform = Platform{c.architecture, c.os, c.os_version, c.os_features, c.variant};
      }
      for (const auto& tag : entry.repo_tags) image.names.push_back(normalize_reference(tag));
      result.images.push_back(std::move(image));
    }
    return result;
  }

  ClientStream input_;
  BlobSink& sink_;
  std::vector<char> buffer_;
  std::exception_ptr error_;
  std::map<std::string, std::string> documents_;
  std::map<std::string, ArchiveFile> files_;
  std::map<std::string, std::string> symlinks_;
  std::map<store::Digest, std::string> kept_;
  size_t kept_total_ = 0;
  std::set<store::Digest> seen_;
};

}  // namespace

void write_image_archive(const std::vector<ArchiveImage>& images, BlobSource& blobs, ByteSink& out,
                         const ArchiveWriteOptions& options) {
  ArchivePlan plan(blobs, options);
  for (const auto& image : images) plan.add(image);
  plan.write(out);
}

ImportResult read_image_archive(int fd, BlobSink& blobs, int cancel_fd) {
  return ArchiveReader(fd, blobs, cancel_fd).read();
}

}  // namespace kbuild::image
