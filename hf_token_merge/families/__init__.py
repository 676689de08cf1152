"""Per-family merge recipes: YAML files shipped inside the package, read with `load_recipe`.

    >>> from hf_token_merge.recipes import load_recipe      # the public path (`hf_token_merge.families` too)
    >>> recipe = load_recipe("llasa")
    >>> apply_token_merge(model, recipe.config, tokenizer=tokenizer)

The YAML files live next to this module (`hf_token_merge/families/*.yaml`), so they are found the same way from a
source checkout and from an installed wheel; the repository's top-level `recipes/` folder links to them.
"""

from hf_token_merge.families.loader import RECIPE_KEYS, Recipe, list_recipes, load_recipe

__all__ = ["RECIPE_KEYS", "Recipe", "list_recipes", "load_recipe"]
