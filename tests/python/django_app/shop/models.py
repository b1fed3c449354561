from django.db import models


class Shelf(models.Model):
    """Left undeclared: a reference table, a copy on every shard."""
    name = models.CharField(max_length=30)


class Item(models.Model):
    name = models.CharField(max_length=30)
    qty = models.IntegerField(default=0)
    shelf = models.ForeignKey(Shelf, null=True, on_delete=models.SET_NULL)


class Line(models.Model):
    item = models.ForeignKey(Item, on_delete=models.CASCADE)
    note = models.CharField(max_length=30)
