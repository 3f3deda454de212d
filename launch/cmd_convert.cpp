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
       "stored weight type: auto (keep f16/bf16, dequantize the rest to f32), f32, f16 or bf16")
      ("quiet,q", po::bool_switch(&opt.quiet), "print nothing on success");
  po::variables_map vm;
  if (!parse_options("convert", "--input SRC --output MODEL.h5 [--dtype auto|f32|f16|bf16]", desc,
                     args, vm))
    return 0;
  convert_model(input, output, opt);
  return 0;
}

}  // namespace tessera::cli
