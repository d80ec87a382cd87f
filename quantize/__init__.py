"""bert_export.quantize"""
