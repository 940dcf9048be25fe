"""A YAML SafeLoader that refuses duplicate keys (YAML keeps the last silently): recipes, catalogs, published rows."""

import yaml


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader (no object-constructing tags) that also refuses duplicate keys, a silent-override trap."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden, by design
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
