"""M-RoPE positions of prompts with images (spec D.4), read through the layout inspection hook."""

import numpy as np
import pytest

from autoglm_gguf import _core

E = 8  # embedding width only matters for the shape check


def img(gh, gw, key=1):
    return (np.zeros((gh * gw, E), np.float32), gh, gw, key)


def test_worked_example_of_spec_d4():
    # [gMASK] <sop> <|user|> \n <|begin_of_image|> [image: merged grid 2 x 4] <|end_of_image|> H i <|assistant|> \n
    cells = _core.layout_prompt([[151331, 151333, 151336, 198, 151339], img(2, 4), [151340, 10, 11, 151337, 198]], E)
    t = [c[1:] for c in cells]
    assert t[:5] == [(i, i, i) for i in range(5)]
    assert t[5:9] == [(5, 5, 5), (5, 5, 6), (5, 5, 7), (5, 5, 8)]       # image row 0
    assert t[9:13] == [(5, 6, 5), (5, 6, 6), (5, 6, 7), (5, 6, 8)]      # image row 1
    assert t[13] == (9, 9, 9)                                          # st + max(rows, cols) = 5 + 4
    assert [c[1] for c in cells[14:]] == [10, 11, 12, 13]
    assert [c[0] for c in cells[5:13]] == [-1] * 8


def test_448_square_image_and_two_images():
    cells = _core.layout_prompt([[1, 2, 3, 4, 5], img(16, 16), [6], img(3, 5, key=2), [7]], E)
    first = cells[5:5 + 256]
    assert {c[1] for c in first} == {5} and {c[2] for c in first} == set(range(5, 21))
    assert cells[5 + 256][1:] == (21, 21, 21)                          # next text at 21 (delta -240)
    second = cells[5 + 256 + 1: 5 + 256 + 1 + 15]
    assert second[0][1:] == (22, 22, 22) and second[-1][1:] == (22, 24, 26)
    assert cells[-1][1:] == (27, 27, 27)                               # 22 + max(3, 5)


def test_bad_image_pieces():
    with pytest.raises(ValueError, match="shape"):
        _core.layout_prompt([[1], (np.zeros((5, E), np.float32), 2, 3, 1)], E)
    with pytest.raises(ValueError, match="empty grid"):
        _core.layout_prompt([[1], (np.zeros((0, E), np.float32), 0, 3, 1)], E)
