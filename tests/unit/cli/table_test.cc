#include "format/table.h"

#include <gtest/gtest.h>

namespace aimesh {
namespace {

TEST(TableTest, AlignsColumnsFromContentAndRightAlignsNumbers) {
  Table t({"NAME", "ADDRESS", "PORT", "CONNECTIONS"});
  t.addRow({"llama-chat", "10.77.0.2", "8000", "40"});
  t.addRow({"embed", "fd00::2", "80", "1200"});
  EXPECT_EQ(t.render(),
            "NAME         ADDRESS     PORT   CONNECTIONS\n"
            "llama-chat   10.77.0.2   8000            40\n"
            "embed        fd00::2       80          1200\n");
}

TEST(TableTest, HeaderOnlyWhenNoRows) {
  Table t({"A", "BB"});
  EXPECT_EQ(t.rowCount(), 0u);
  EXPECT_EQ(t.render(), "A   BB\n");
}

TEST(TableTest, NoTrailingBlanksAndShortRowsPadded) {
  Table t({"NAME", "STATE"});
  t.addRow({"a-very-long-name", "active"});
  t.addRow({"b"});
  t.addRow({"c", "draining", "extra cell dropped"});
  EXPECT_EQ(t.render(),
            "NAME               STATE\n"
            "a-very-long-name   active\n"
            "b\n"
            "c                  draining\n");
}

TEST(TableTest, DashAndEmptyDoNotStopNumericAlignment) {
  Table t({"X", "N"});
  t.addRow({"a", "-"});
  t.addRow({"b", "12345"});
  t.addRow({"c", ""});
  EXPECT_EQ(t.render(),
            "X       N\n"
            "a       -\n"
            "b   12345\n"
            "c\n");
}

TEST(TableTest, MixedColumnIsLeftAligned) {
  Table t({"V", "END"});
  t.addRow({"12", "x"});
  t.addRow({"abc", "y"});
  EXPECT_EQ(t.render(),
            "V     END\n"
            "12    x\n"
            "abc   y\n");
}

TEST(TableTest, ExplicitAlignmentWins) {
  Table t({"ID", "NAME"});
  t.addRow({"7", "x"});
  t.addRow({"1234", "y"});
  t.setAlign(0, Table::Align::kLeft);
  t.setAlign(1, Table::Align::kRight);
  t.setAlign(9, Table::Align::kRight);  // out of range: ignored
  EXPECT_EQ(t.render(),
            "ID     NAME\n"
            "7         x\n"
            "1234      y\n");
}

TEST(TableTest, NumberDetection) {
  for (const char* yes : {"0", "42", "-3", "0.25", "99%", "2/3", "12.5%"}) {
    EXPECT_TRUE(Table::isNumber(yes)) << yes;
  }
  for (const char* no : {"", "-", "10.0.0.1", "1.", ".5", "abc", "2/", "/3", "1/2/3", "fd00::1",
                         "8000/TCP", "1e5"}) {
    EXPECT_FALSE(Table::isNumber(no)) << no;
  }
}

TEST(TableTest, WidthCountsUtf8CodePoints) {
  EXPECT_EQ(Table::displayWidth("modèle"), 6u);
  Table t({"NAME", "N"});
  t.addRow({"modèle", "1"});
  t.addRow({"abc", "22"});
  EXPECT_EQ(t.render(),
            "NAME      N\n"
            "modèle    1\n"
            "abc      22\n");
}

TEST(TableTest, KeyValuesLineUpValues) {
  EXPECT_EQ(renderKeyValues({{"version", "0.1.0"}, {"pid", "123"}, {"reconcile errors", "1"}}),
            "version:          0.1.0\n"
            "pid:              123\n"
            "reconcile errors: 1\n");
  EXPECT_EQ(renderKeyValues({{"empty", ""}}), "empty:\n");
  EXPECT_EQ(renderKeyValues({}), "");
}

}  // namespace
}  // namespace aimesh
