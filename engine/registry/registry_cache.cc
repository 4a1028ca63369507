#include "engine/registry/registry_cache.h"

#include "common/error.h"

namespace kbuild::registry {

remotecache::RootDocument RegistryCache::root() {
  FetchedManifest fetched = client_.manifest(reference_, tag_or_digest());
  return remotecache::RootDocument{fetched.media_type, std::move(fetched.bytes)};
}

void RegistryCache::blob(const image::Descriptor& blob, const std::function<void(std::string_view)>& sink) {
  if (blob.size < 0) throw Error(ErrorKind::user, "blob " + blob.digest.str() + " has a negative size");
  client_.blob(reference_, blob.digest, blob.size, sink);
}

bool RegistryCache::has_blob(const store::Digest& digest) { return client_.has_blob(reference_, digest); }

void RegistryCache::put_blob(const image::Descriptor& blob, const std::function<size_t(char*, size_t)>& read) {
  client_.upload_blob(reference_, blob.digest, static_cast<uint64_t>(blob.size), read);
}

void RegistryCache::put_root(const std::string& media_type, const std::string& bytes) {
  client_.put_manifest(reference_, tag_or_digest(), media_type, bytes);
}

}  // namespace kbuild::registry
