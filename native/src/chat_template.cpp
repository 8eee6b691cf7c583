#include "chat_template.h"

#include "error.h"

namespace autoglm {

const char * const IMAGE_SLOT = "<|begin_of_image|><|image|><|end_of_image|>";
static const char * const VIDEO_SLOT = "<|begin_of_video|><|video|><|end_of_video|>";

std::string format_glm4v_chat(const std::vector<chat_message> & messages, bool add_generation_prompt) {
    std::string out = "[gMASK]<sop>";
    for (size_t i = 0; i < messages.size(); ++i) {
        const chat_message & m = messages[i];
        if (m.role == "system") out += "<|system|>\n";
        else if (m.role == "user") out += "<|user|>\n";
        else if (m.role == "assistant") out += "<|assistant|>" + m.metadata + "\n";
        else if (m.role == "observation" || m.role == "tool") out += "<|observation|>\n";
        else
            throw invalid_argument("message " + std::to_string(i) + " has role '" + m.role +
                                   "'; expected system, user, assistant or observation");
        for (const chat_part & p : m.parts) {
            switch (p.type) {
                case chat_part::kind::text: out += p.text; break;
                case chat_part::kind::image: out += IMAGE_SLOT; break;
                case chat_part::kind::video: out += VIDEO_SLOT; break;
            }
        }
    }
    if (add_generation_prompt) out += "<|assistant|>\n";
    return out;
}

}  // namespace autoglm
