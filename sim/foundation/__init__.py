"""The foundation every package stands on: errors, atomic files, the field-spec
machinery, CLI argument types.  Imports nothing of the project (layer 0).
"""
