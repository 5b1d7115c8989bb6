"""The one check every parameter class makes of its config section: each key known, none
missing. Defaults live in the JSON schema alone, so a section built by hand without them
is refused here rather than silently filled. Standard library only: kernels import it."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence


def require_keys(
    section: str, cfg: Mapping, names: Sequence[str], ignored: Collection[str] = ()
) -> None:
    """``cfg`` holds exactly ``names`` (plus ``ignored``, keys of the section another stage
    reads); a ValueError names the first key that is unknown or missing."""
    for key in cfg:
        if key not in names and key not in ignored:
            raise ValueError(f"{section}.{key}: unknown key (known: {', '.join(names)})")
    for key in names:
        if key not in cfg:
            raise ValueError(
                f"{section}.{key}: missing; build from the validated config, which holds "
                "the schema's defaults (imgprep.config.section_config for this part alone)"
            )
