"""The built-in scorers, one module each, named as the scorer.

Module <name>.py defines `SCORER = Scorer(name='<name>', ...)` (and, with
options, `defaults()`); aad.scoring.get finds it by importlib. This
package imports nothing: every module here is a scorer, loaded when named.
"""
