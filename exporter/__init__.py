"""bert_export.exporter"""
