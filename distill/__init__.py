"""Offline side of fewstep (torch): data, text encoder, teacher training, distillation, export.

Never imported by `service`; it depends on `fewstep` and `shapesworld` only.
"""
