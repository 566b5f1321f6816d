"""`babysit recipe`: the course notes' whole training process run for the user, within a time budget.

budget.py splits the time, rules.py holds the decision rules, early/searching/late.py the steps, run.py runs
them in order and resumes; babysit.review.recipereport writes the report from the recipe folder.
"""

from babysit.recipe.run import RecipeResult, recipe

__all__ = ["RecipeResult", "recipe"]
