from __future__ import annotations

import pytest

from airflow_sora.services import InvalidVideoUrlError, post_id_from_url, validate_video_url

GOOD = "https://sora.chatgpt.com/p/s_68e83bd7eee88191be79d2ba7158516f"


@pytest.mark.parametrize("url", [GOOD, GOOD + "?psh=HXVzZXItb", GOOD + "#top", GOOD + "?a=1&b=2#frag"])
def test_accepts_public_sora_links(url: str) -> None:
    assert validate_video_url(url) == url
    assert post_id_from_url(url) == "s_68e83bd7eee88191be79d2ba7158516f"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://sora.chatgpt.com/p/s_68e83bd7eee88191be79d2ba7158516f", "not a public Sora post link"),
        ("https://sora.chatgpt.com/p/s_68E83BD7EEE88191BE79D2BA7158516F", "not a public Sora post link"),
        ("https://sora.chatgpt.com/p/s_68e83bd7eee88191be79d2ba7158516", "not a public Sora post link"),
        ("https://evil.com/p/s_68e83bd7eee88191be79d2ba7158516f", "not a public Sora post link"),
        ("https://sora.chatgpt.com.evil.com/p/s_68e83bd7eee88191be79d2ba7158516f", "not a public"),
        ("https://sora.chatgpt.com/g/gen_01abc", "not a public Sora post link"),
        (" " + GOOD, "whitespace"),
        (GOOD + "?q=" + "a" * 500, "at most 500"),
        ("", "not a public Sora post link"),
        (GOOD + "?q=<script>", "not a public Sora post link"),
    ],
)
def test_rejects_everything_else_naming_url_and_form(url: str, reason: str) -> None:
    with pytest.raises(InvalidVideoUrlError) as info:
        validate_video_url(url)
    message = str(info.value)
    assert reason in message
    assert "https://sora.chatgpt.com/p/s_<32 lowercase hex characters>" in message
    assert info.value.url == url


def test_rejects_non_strings() -> None:
    with pytest.raises(InvalidVideoUrlError, match="must be a string, got int"):
        validate_video_url(42)
