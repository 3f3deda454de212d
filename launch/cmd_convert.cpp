// tessera convert: a GGUF file or a Hugging Face checkpoint folder -> a tessera model file.
#include "io/convert.h"
#include "launch/options.h"

namespace tessera::cli {

int run_convert(const Args& args) {
  po::options_description desc("Options");
  std::string input, output;
  ConvertOptions opt;
  desc.add_options()
      ("input,i", po::value(&input)->required(),
       "a .gguf file, or a Hugging Face folder (config.json, *.safetensors, tokenizer.json)")
      ("output,o", po::value(&output)->required(), "the model file to write (.h5)")
      ("dtype", po::value(&opt.dtype)->default_value("auto"),
       "stored weight type: auto (keep every tensor's type: f32, f16, bf16, GGUF's quantized "
       "blocks as they are, AWQ / GPTQ int4 and FP8 checkpoints as i4_g32 / i4_g128 / f8_e4m3 "
       "blocks), or f32, f16, bf16 (dequantize everything)")
      ("quantize", po::value(&opt.quantize),
       "quantize the matrices with tessera's quantizer: q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, "
       "q6_k, i4_g32, i4_g128, f8_e4m3, or q4_k_m (q6_k for the LM head and some v/down "
       "projections, q4_k for the rest); "
       "rows that are not whole blocks take the nearest format that fits")
      ("quiet,q", po::bool_switch(&opt.quiet), "print nothing on success");
  po::variables_map vm;
  if (!parse_options("convert",
                     "--input SRC --output MODEL.h5 [--dtype auto|f32|f16|bf16] [--quantize FORMAT]",
                     desc, args, vm))
    return 0;
  convert_model(input, output, opt);
  return 0;
}

}  // namespace tessera::cli
