#include "service/solve_progress.h"

namespace kbuild::service {

void SolveProgress::announced(const std::string& vertex, const std::string& name) {
  if (classic_) return;
  std::lock_guard lock(mutex_);
  if (vertices_.count(vertex)) return;
  progress::Vertex& v = vertices_[vertex];
  v.digest = vertex;
  v.name = name;
  progress::SolveStatus status;
  status.vertexes.push_back(v);
  writer_.write(status);
}

void SolveProgress::started(const std::string& vertex, const std::string& name) {
  if (classic_) return;
  std::lock_guard lock(mutex_);
  progress::Vertex& v = vertices_[vertex];
  v.digest = vertex;
  v.name = name;
  v.started = progress::Timestamp::now();
  progress::SolveStatus status;
  status.vertexes.push_back(v);
  writer_.write(status);
}

void SolveProgress::completed(const std::string& vertex, const std::string& name, bool cached,
                              const std::string& error) {
  if (classic_) return;
  std::lock_guard lock(mutex_);
  progress::Vertex& v = vertices_[vertex];
  v.digest = vertex;
  if (!name.empty()) v.name = name;
  progress::Timestamp now = progress::Timestamp::now();
  if (!v.started) v.started = now;
  v.completed = now;
  v.cached = cached;
  v.error = error;
  progress::SolveStatus status;
  status.vertexes.push_back(v);
  writer_.write(status);
}

void SolveProgress::status(const std::string& vertex, const std::string& id, int64_t current, int64_t total,
                           bool done) {
  if (classic_) return;
  std::lock_guard lock(mutex_);
  progress::VertexStatus& s = statuses_[{vertex, id}];
  progress::Timestamp now = progress::Timestamp::now();
  s.id = id;
  s.vertex = vertex;
  s.current = current;
  s.total = total;
  s.timestamp = now;
  if (!s.started) s.started = now;
  if (done) s.completed = now;
  progress::SolveStatus status;
  status.statuses.push_back(s);
  writer_.write(status);
}

void SolveProgress::log(const std::string& vertex, int stream, std::string_view data) {
  if (classic_) return;
  std::lock_guard lock(mutex_);
  progress::SolveStatus status;
  status.logs.push_back(progress::VertexLog{vertex, stream, std::string(data), progress::Timestamp::now()});
  writer_.write(status);
}

void SolveProgress::warning(const std::string& vertex, const std::string& text) {
  if (classic_) return;
  std::lock_guard lock(mutex_);
  progress::SolveStatus status;
  progress::VertexWarning warning;
  warning.vertex = vertex;
  warning.level = 1;
  warning.short_text = text;
  status.warnings.push_back(std::move(warning));
  writer_.write(status);
}

void SolveProgress::classic_output(std::string_view text) {
  if (!classic_ || text.empty()) return;
  std::lock_guard lock(mutex_);
  progress::SolveStatus status;
  status.logs.push_back(progress::VertexLog{std::string(progress::kClassicOutputVertex), 1, std::string(text),
                                            progress::Timestamp::now()});
  writer_.write(status);
}

}  // namespace kbuild::service
