#include "runtime/step_plan.h"

#include <cstring>
#include <type_traits>

#include "kernels/error.h"

namespace tessera {
namespace {

constexpr uint32_t kMagic = 0x54535032;  // "TSP2"

class Writer {
 public:
  template <typename T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    out_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  template <typename T>
  void put_vector(const std::vector<T>& v) {
    put(uint64_t(v.size()));
    out_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(const std::string& in) : in_(in) {}
  template <typename T>
  T get() {
    T v;
    need(sizeof(T));
    std::memcpy(&v, in_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  template <typename T>
  std::vector<T> get_vector() {
    const uint64_t n = get<uint64_t>();
    TESSERA_ASSERT(n <= (in_.size() - at_) / sizeof(T), "step plan: a list runs past the end");
    std::vector<T> v(n);
    std::memcpy(v.data(), in_.data() + at_, n * sizeof(T));
    at_ += n * sizeof(T);
    return v;
  }
  bool done() const { return at_ == in_.size(); }

 private:
  void need(size_t n) const {
    TESSERA_ASSERT(in_.size() - at_ >= n, "step plan: truncated after " << at_ << " bytes");
  }
  const std::string& in_;
  size_t at_ = 0;
};

}  // namespace

void apply_share(const KvShare& share, bool start, std::vector<int32_t>& table) {
  if (start) table.clear();
  for (const TableEntry& e : share.replaced) {
    TESSERA_ASSERT(
        e.index >= 0 && e.index < int64_t(table.size()),
        "step plan: entry " << e.index << " of a table of " << table.size() << " blocks");
    table[size_t(e.index)] = e.block;
  }
  table.insert(table.end(), share.blocks.begin(), share.blocks.end());
}

int64_t StepPlan::tokens() const {
  int64_t n = 0;
  for (const SequenceWork& w : work) n += int64_t(w.tokens.size());
  return n;
}

int64_t StepPlan::samples() const {
  int64_t n = 0;
  for (const SequenceWork& w : work) n += w.sample;
  return n;
}

std::string StepPlan::encode() const {
  Writer w;
  w.put(kMagic);
  w.put(id);
  w.put(uint8_t(stop));
  w.put_vector(release);
  w.put_vector(copies);
  w.put(uint64_t(work.size()));
  for (const SequenceWork& s : work) {
    w.put(s.seq);
    w.put(s.position);
    w.put_vector(s.tokens);
    w.put(uint64_t(s.kv.size()));
    for (const KvShare& k : s.kv) {
      w.put(k.rows);
      w.put_vector(k.blocks);
      w.put_vector(k.replaced);
    }
    w.put(uint8_t(s.start));
    w.put_vector(s.context);
    w.put(s.logits);
    w.put(uint8_t(s.sample));
    w.put(s.output_index);
    w.put(s.sampling);  // trivially copyable: the same binary on every rank
    w.put(s.drafts);
  }
  return w.take();
}

StepPlan StepPlan::decode(const std::string& bytes) {
  Reader r(bytes);
  TESSERA_ASSERT(r.get<uint32_t>() == kMagic, "step plan: bad magic");
  StepPlan p;
  p.id = r.get<int64_t>();
  p.stop = r.get<uint8_t>() != 0;
  p.release = r.get_vector<int64_t>();
  p.copies = r.get_vector<BlockCopy>();
  const uint64_t n = r.get<uint64_t>();
  TESSERA_ASSERT(n <= bytes.size(),
                 "step plan: " << n << " sequences in " << bytes.size() << " bytes");
  p.work.resize(n);
  for (SequenceWork& s : p.work) {
    s.seq = r.get<int64_t>();
    s.position = r.get<int64_t>();
    s.tokens = r.get_vector<int32_t>();
    const uint64_t shares = r.get<uint64_t>();
    TESSERA_ASSERT(shares <= bytes.size(), "step plan: " << shares << " KV shares");
    s.kv.resize(shares);
    for (KvShare& k : s.kv) {
      k.rows = r.get<int64_t>();
      k.blocks = r.get_vector<int32_t>();
      k.replaced = r.get_vector<TableEntry>();
    }
    s.start = r.get<uint8_t>() != 0;
    s.context = r.get_vector<int32_t>();
    s.logits = r.get<int64_t>();
    s.sample = r.get<uint8_t>() != 0;
    s.output_index = r.get<int64_t>();
    s.sampling = r.get<SamplingParams>();
    s.drafts = r.get<int64_t>();
    TESSERA_ASSERT(
        s.drafts == 0 || (s.sample && s.drafts > 0 && s.drafts < int64_t(s.tokens.size())),
        "step plan: " << s.drafts << " proposals among " << s.tokens.size() << " tokens");
  }
  TESSERA_ASSERT(r.done(), "step plan: bytes left over");
  return p;
}

}  // namespace tessera
