"""Catalog-derived validation and quotes (pure: no I/O)."""

from __future__ import annotations

import pytest

from kling_mcp import catalog, errors
from kling_mcp.config import Settings
from kling_mcp.requests import MediaRef, VideoSpec
from kling_mcp.service import VideoService
from kling_mcp.specs import infer_operation
from kling_mcp.validation import check


def url(kind: str = "image", duration: float | None = None) -> MediaRef:
    return MediaRef(kind="url", value=f"https://example.test/x.{'png' if kind == 'image' else 'mp4'}",
                    media=kind, duration_s=duration)  # type: ignore[arg-type]


def spec(operation: str, **kw) -> VideoSpec:
    return VideoSpec(operation=operation, prompt=kw.pop("prompt", "a red fox in the snow"), **kw)  # type: ignore[arg-type]


def test_operation_is_inferred_from_inputs():
    assert infer_operation() == "text"
    assert infer_operation(first_frame="a") == "image"
    assert infer_operation(last_frame="a") == "image"
    assert infer_operation(reference_images=["a"]) == "reference"
    assert infer_operation(reference_video="v") == "reference"
    assert infer_operation(video="v", reference_images=["a"]) == "edit"


def test_bounds_are_the_widest_provider_limits():
    b = catalog.bounds()
    assert (b["duration_min"], b["duration_max"]) == (3, 10)
    assert b["reference_images_max"] == 10          # runpod
    assert b["num_videos_max"] == 4                 # runware numberResults
    assert b["prompt_max"] == 5000                  # evolink
    assert set(b["aspect_ratios"]) == {"16:9", "9:16", "1:1"}


def test_every_variant_has_prices_with_a_basis_and_sizes_for_its_aspects():
    for entry in catalog.PROVIDERS.values():
        for v in entry.variants:
            assert v.operations, v.model
            for op in v.operations.values():
                assert op.price.basis in ("published", "inferred", "unknown")
                assert op.price.source
                for ar in op.aspect_ratios:
                    assert ar in v.sizes


@pytest.mark.parametrize("provider,tier,rate", [("runware", "pro", 0.112), ("runware", "standard", 0.084)])
def test_text_quote_and_defaults(provider, tier, rate):
    m = check(spec("text"), provider, tier)
    assert m.ok, m.problems
    assert m.duration == 5 and m.aspect_ratio == "16:9"
    assert m.cost_usd == pytest.approx(rate * 5)


def test_duration_outside_the_provider_rule_names_rule_value_and_choices():
    m = check(spec("text", duration=7), "runware", "pro")
    assert not m.ok
    assert "duration 7 s" in m.problems[0] and "5 or 10" in m.problems[0]
    assert check(spec("reference", duration=7, reference_images=[url()]), "runware", "pro").ok


def test_operation_not_offered_names_what_is_offered():
    m = check(spec("text"), "runpod")
    assert "does not offer text-to-video" in m.problems[0] and "reference-to-video" in m.problems[0]
    assert not check(spec("text"), "aimlapi").ok


def test_reference_image_caps():
    five = [url()] * 5
    assert check(spec("reference", reference_images=five), "runpod").ok
    m = check(spec("reference", reference_images=[url()] * 11), "runpod")
    assert "1-10 reference_images" in m.problems[0] and "got 11" in m.problems[0]
    m = check(spec("reference", reference_images=[url()] * 5, reference_video=url("video", 5)), "aimlapi")
    assert any("0-4 reference_images with a video" in p for p in m.problems)
    m = check(spec("edit", video=url("video", 5), reference_images=[url()] * 5), "runware", "pro")
    assert any("0-4" in p for p in m.problems)


def test_runpod_needs_images_even_with_a_video():
    m = check(spec("reference", reference_video=url("video", 5)), "runpod")
    assert any("1-10 reference_images with a video" in p for p in m.problems)


def test_edit_input_video_range_and_fast_mode():
    short = spec("edit", video=url("video", 2.0))
    assert any("2 s" in p and "3-10 s" in p for p in check(short, "evolink").problems)
    long = spec("edit", video=url("video", 15.0))
    problems = check(long, "evolink").problems
    assert any("use fast=true, which accepts 6-20 s" in p for p in problems)
    assert check(spec("edit", video=url("video", 15.0), fast=True), "evolink").ok
    assert not check(spec("edit", video=url("video", 4.0), fast=True), "evolink").ok


def test_edit_with_unknown_length_is_not_guessed():
    m = check(spec("edit", video=url("video", None)), "evolink")
    assert m.ok and m.cost_usd is None and "unknown" in m.note


def test_edit_price_uses_input_length_and_fast_model():
    m = check(spec("edit", video=url("video", 6.0)), "runware", "pro")
    assert m.cost_usd == pytest.approx(1.008)        # the seed's pro edit example
    m = check(spec("edit", video=url("video", 6.0)), "runware", "standard")
    assert m.cost_usd == pytest.approx(0.756)        # the seed's standard edit example
    fast = check(spec("edit", video=url("video", 12.0), fast=True), "evolink")
    assert fast.model == "kling-o1-video-edit-fast"
    assert not check(spec("edit", video=url("video", 12.0), fast=True), "runware", "standard").ok


def test_reference_with_video_bills_r2v_and_switches_model():
    m = check(spec("reference", reference_video=url("video", 5), reference_images=[url()]), "runware", "standard")
    assert m.cost_usd == pytest.approx(0.63)         # the seed's standard R2V example
    m = check(spec("reference", reference_video=url("video", 5), reference_images=[url()]), "aimlapi")
    assert m.model == "klingai/video-o1-video-to-video-reference"
    m = check(spec("reference", reference_images=[url()]), "aimlapi")
    assert m.model == "klingai/video-o1-reference-to-video"


def test_aspect_ratio_for_image_to_video_is_refused_where_output_follows_the_frame():
    m = check(spec("image", first_frame=url(), aspect_ratio="9:16"), "runware", "pro")
    assert "follows the first frame" in m.problems[0]
    assert check(spec("image", first_frame=url(), aspect_ratio="9:16"), "evolink").ok


def test_unsupported_extras_are_named():
    m = check(spec("reference", reference_images=[url()], negative_prompt="blur", seed=3, num_videos=2), "aimlapi")
    text = " ".join(m.problems)
    assert "negative_prompt" in text and "seed" in text and "num_videos 2" in text


def test_prompt_length_per_provider():
    long = "x" * 3000
    assert any("3000 characters" in p for p in check(spec("image", first_frame=url(), prompt=long),
                                                     "aimlapi").problems)
    assert check(spec("image", first_frame=url(), prompt=long), "evolink").ok


def test_tier_missing_is_named():
    m = check(spec("reference", reference_images=[url()]), "runpod", "pro")
    assert "no pro tier" in m.problems[0] and "standard" in m.problems[0]


def _service(tmp_path, env: dict[str, str]) -> VideoService:
    import httpx

    return VideoService(Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path), **env}), httpx.AsyncClient())


def test_auto_picks_the_cheapest_configured_provider(tmp_path):
    svc = _service(tmp_path, {"RUNWARE_API_KEY": "k1", "RUNPOD_API_KEY": "k2"})
    matches = svc.choose(spec("reference", reference_images=[url()]), "auto")
    assert [m.provider for m in matches][:2] == ["runware", "runpod"]   # 0.084 standard < 0.112
    assert matches[0].variant.tier == "standard"


def test_local_is_chosen_only_without_a_configured_provider(tmp_path):
    assert _service(tmp_path, {}).choose(spec("text"), "auto")[0].provider == "local"
    assert _service(tmp_path, {"RUNWARE_API_KEY": "k"}).choose(spec("text"), "auto")[0].provider == "runware"


def test_unconfigured_provider_names_the_env_var(tmp_path):
    with pytest.raises(errors.NotConfigured) as exc:
        _service(tmp_path, {}).choose(spec("text"), "runpod")
    assert "RUNPOD_API_KEY" in str(exc.value)


def test_unsupported_names_providers_that_would_accept(tmp_path):
    svc = _service(tmp_path, {"RUNPOD_API_KEY": "k", "RUNWARE_API_KEY": "k2"})
    with pytest.raises(errors.UnsupportedByProvider) as exc:
        svc.choose(spec("text"), "runpod")
    text = str(exc.value)
    assert "[runpod]" in text and "provider=runware" in text and "local" in text


def test_auto_with_nothing_valid_lists_every_problem(tmp_path):
    svc = _service(tmp_path, {"AIML_API_KEY": "k"})
    with pytest.raises(errors.InvalidRequest) as exc:
        svc.choose(spec("text"), "auto")
    assert "[aimlapi]" in str(exc.value) and "RUNWARE_API_KEY" in str(exc.value)


def test_variant_for_model_knows_per_operation_model_ids():
    assert catalog.variant_for_model("evolink", "kling-o1-video-edit-fast").model == "kling-o1-image-to-video"
    assert catalog.variant_for_model("aimlapi", "klingai/video-o1-video-to-video-reference").provider == "aimlapi"
    assert catalog.variant_for_model("runware", "klingai:kling@o1-standard").tier == "standard"
    assert catalog.variant_for_model("runware", "klingai:kling@o1").tier == "pro"
