"""Example configs that ship with radar (``radar.configs``); ``radar examples`` lists, prints and copies them."""
