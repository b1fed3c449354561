from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=30)
    qty = models.IntegerField(default=0)


class Line(models.Model):
    item = models.ForeignKey(Item, on_delete=models.CASCADE)
    note = models.CharField(max_length=30)
