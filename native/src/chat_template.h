// The GLM-4.1V / AutoGLM chat format, built in (spec D.2), so C and Python callers can render prompts
// without a Jinja engine. The GGUF's tokenizer.chat_template stays available for tools that render it.
// ref: GLM-4.1V-9B-Thinking chat_template (rendered by transformers' apply_chat_template).
//
//   [gMASK]<sop>
//   <|system|>\n{text}    <|user|>\n{parts}    <|assistant|>{metadata}\n{text}    <|observation|>\n{text}
//   ... then <|assistant|>\n when a generation prompt is requested.
// User parts are concatenated without separators; an image part renders as
// <|begin_of_image|><|image|><|end_of_image|> (the slot an image fills), a video part likewise.
#pragma once

#include <string>
#include <vector>

namespace autoglm {

struct chat_part {
    enum class kind { text, image, video };
    kind type = kind::text;
    std::string text;  // for kind::text
};

struct chat_message {
    std::string role;       // system | user | assistant | observation (tool is accepted as observation)
    std::vector<chat_part> parts;
    std::string metadata;   // assistant only: written right after <|assistant|>
};

// Throws invalid_argument for an unknown role (naming it and its index).
std::string format_glm4v_chat(const std::vector<chat_message> & messages, bool add_generation_prompt);

extern const char * const IMAGE_SLOT;  // "<|begin_of_image|><|image|><|end_of_image|>"

}  // namespace autoglm
