"""Architecture variants of the tiny test checkpoints, shared by conftest's fixtures and the tests that
build their own checkpoints from the same configurations."""

# A second architecture variant: other widths, head counts, GQA ratio, rope sections and theta, depth,
# an odd vocabulary size (509), and an FFN width (100) that is not a multiple of 32, so quantized types
# must fall back.
ALT_TEXT = {"hidden_size": 96, "vocab_size": 509, "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 2,
            "intermediate_size": 100, "rope_parameters": {"rope_theta": 500000.0, "mrope_section": [2, 1, 1]}}
ALT_VISION = {"hidden_size": 48, "depth": 3, "num_heads": 4, "intermediate_size": 72, "image_size": 84}
