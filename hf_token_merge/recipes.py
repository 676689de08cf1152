"""The public name of the family recipes: `hf_token_merge.families` under its documented import path.

    >>> from hf_token_merge.recipes import load_recipe

The YAML files and their loader live in `hf_token_merge/families/`, named apart from the repository's top-level
`recipes/` folder (recipe links, and the scripts that rebuild the reference assets).
"""

from hf_token_merge.families import RECIPE_KEYS, Recipe, list_recipes, load_recipe

__all__ = ["RECIPE_KEYS", "Recipe", "list_recipes", "load_recipe"]
