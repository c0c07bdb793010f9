// SPDX-License-Identifier: Apache-2.0
// Builds without Highway (GCOMP_HWY=OFF or libhwy-dev missing): the kernels are the scalar
// reference kernels (kernels_ref.cpp).
#include "host/codecs/kernels.hpp"

namespace gcomp::detail::kernels {

std::string active_target() { return "scalar"; }
std::vector<std::pair<int64_t, std::string>> available_targets() { return {{-1, "scalar"}}; }
void force_target(int64_t) {}

void philox_words(const RngKey& key, uint32_t stream, uint64_t first_q, int64_t num_q, uint32_t* words) {
  ref::philox_words(key, stream, first_q, num_q, words);
}
double reduce_tile(ReduceOp op, const float* x, int64_t len, double mean) { return ref::reduce_tile(op, x, len, mean); }
int64_t find_nonfinite(const float* x, int64_t n) { return ref::find_nonfinite(x, n); }
void quantize(bool natural, const float* x, int64_t len, float nu, uint32_t levels, const uint32_t* words,
              uint32_t* coded) {
  ref::quantize(natural, x, len, nu, levels, words, coded);
}
void pack_planes(const uint32_t* coded, int64_t num_groups, int nbits, uint32_t* out) {
  ref::pack_planes(coded, num_groups, nbits, out);
}
void quantize_planes(bool natural, const float* x, const float* nu, const float* recip, const uint32_t* words,
                     int64_t num_groups, uint32_t levels, int nbits, uint32_t* out) {
  ref::quantize_planes(natural, x, nu, recip, words, num_groups, levels, nbits, out);
}
void sign_words(const float* x, int64_t num_groups, uint32_t* out) { ref::sign_words(x, num_groups, out); }
void decode_planes(const uint32_t* groups, int nbits, int64_t first, int64_t len, const float* table, float weight,
                   bool accumulate, float* out) {
  ref::decode_planes(groups, nbits, first, len, table, weight, accumulate, out);
}
void natural_encode(const float* x, int64_t len, const uint32_t* words, uint8_t* codes, uint32_t* signs) {
  ref::natural_encode(x, len, words, codes, signs);
}
void natural_decode(const uint8_t* codes, const uint32_t* signs, int64_t first, int64_t len, float weight,
                    bool accumulate, float* out) {
  ref::natural_decode(codes, signs, first, len, weight, accumulate, out);
}
bool natural_invalid(const uint8_t* codes, const uint32_t* signs, int64_t num_groups) {
  return ref::natural_invalid(codes, signs, num_groups);
}
void grid_levels(const float* x, int64_t len, double step, double inv_step, uint32_t bits, int32_t* levels) {
  ref::grid_levels(x, len, step, inv_step, bits, levels);
}
void pack_fields(const int32_t* levels, int64_t len, uint32_t bits, uint32_t* words) {
  ref::pack_fields(levels, len, bits, words);
}
void unpack_fields(const uint32_t* words, int64_t first, int64_t len, uint32_t bits, int32_t* levels) {
  ref::unpack_fields(words, first, len, bits, levels);
}
void grid_decode(const int32_t* levels, int64_t len, double step, float weight, bool accumulate, float* out) {
  ref::grid_decode(levels, len, step, weight, accumulate, out);
}
void axpy(const float* v, int64_t len, float weight, float* out) { ref::axpy(v, len, weight, out); }
void topk_order_keys(const float* x, int64_t len, uint32_t* ord) { ref::topk_order_keys(x, len, ord); }
int64_t select_at_most(const uint32_t* keys, int64_t len, uint32_t threshold, uint32_t* idx) {
  return ref::select_at_most(keys, len, threshold, idx);
}

}  // namespace gcomp::detail::kernels
