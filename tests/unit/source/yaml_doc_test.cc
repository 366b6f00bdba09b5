#include "source/yaml_doc.h"

#include <gtest/gtest.h>

#include <string>

namespace aimesh::yaml {
namespace {

TEST(YamlDoc, MapsSequencesAndScalarsInFileOrder) {
  Stream s = Stream::parse("services:\n  - name: chat\n    ports: [{port: 8000}, {port: 8001}]\n  - name: embed\n");
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_EQ(s.documents(), 1u);
  Node root = s.document(0);
  ASSERT_TRUE(root.IsMap());
  ASSERT_EQ(root.size(), 1u);
  EXPECT_EQ(root.key(0).Scalar(), "services");
  Node list = root.value(0);
  ASSERT_TRUE(list.IsSequence());
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].key(0).Scalar(), "name");
  EXPECT_EQ(list[0].value(0).Scalar(), "chat");
  Node ports = list[0].value(1);
  ASSERT_EQ(ports.size(), 2u);
  EXPECT_EQ(ports[1].value(0).Scalar(), "8001");
  EXPECT_EQ(list[1].value(0).Scalar(), "embed");
  // Past the end, or the wrong kind: Undefined, not a crash.
  EXPECT_FALSE(list[2].IsDefined());
  EXPECT_FALSE(root.value(5).IsDefined());
  EXPECT_FALSE(list.key(0).IsDefined());
  EXPECT_EQ(list[2].Scalar(), "");
  EXPECT_EQ(list[2].size(), 0u);
}

TEST(YamlDoc, MarksAreZeroBasedWhereTheNodeStarts) {
  Stream s = Stream::parse("a: 1\nb:\n  - x\n  - {c: 'd'}\n");
  ASSERT_TRUE(s.ok());
  Node b = s.document(0).value(1);
  EXPECT_EQ(s.document(0).key(1).Mark().line, 1);
  EXPECT_EQ(s.document(0).key(1).Mark().column, 0);
  EXPECT_EQ(b[0].Mark().line, 2);
  EXPECT_EQ(b[0].Mark().column, 4);
  EXPECT_EQ(b[1].Mark().line, 3);
  EXPECT_EQ(b[1].Mark().column, 4);
  EXPECT_EQ(b[1].value(0).Mark().column, 8);
  EXPECT_TRUE(Node().Mark().is_null());
}

TEST(YamlDoc, PlainNullsAreNullQuotedOnesAreStrings) {
  Stream s = Stream::parse("a:\nb: ~\nc: null\nd: NULL\ne: ''\nf: \"null\"\ng: !!str\nh: nil\n");
  ASSERT_TRUE(s.ok());
  Node r = s.document(0);
  for (size_t i : {0, 1, 2, 3}) EXPECT_TRUE(r.value(i).IsNull()) << r.key(i).Scalar();
  for (size_t i : {4, 5, 6, 7}) EXPECT_TRUE(r.value(i).IsScalar()) << r.key(i).Scalar();
  EXPECT_EQ(r.value(5).Scalar(), "null");
}

TEST(YamlDoc, TagsAsYamlCppNamesThem) {
  Stream s = Stream::parse("a: 8000\nb: '8000'\nc: |\n  text\nd: !!int 8000\ne: ! 8000\n");
  ASSERT_TRUE(s.ok());
  Node r = s.document(0);
  EXPECT_EQ(r.value(0).Tag(), "?");
  EXPECT_EQ(r.value(1).Tag(), "!");
  EXPECT_EQ(r.value(2).Tag(), "!");
  EXPECT_EQ(r.value(2).Scalar(), "text\n");
  EXPECT_EQ(r.value(3).Tag(), "tag:yaml.org,2002:int");
  EXPECT_EQ(r.value(4).Tag(), "!");
}

TEST(YamlDoc, AliasesAreTheAnchoredNode) {
  Stream s = Stream::parse("base: &ep {address: 10.0.0.1, port: 80}\nlist: [*ep, *ep]\n");
  ASSERT_TRUE(s.ok()) << s.error().message;
  Node list = s.document(0).value(1);
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[1].value(0).Scalar(), "10.0.0.1");
  EXPECT_EQ(list[1].Mark().line, 0);  // where the anchored node is
}

TEST(YamlDoc, AnUnknownAliasIsAnErrorWhereItIs) {
  Stream s = Stream::parse("a: 1\nb: *nowhere\n");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message, "unknown anchor 'nowhere'");
  EXPECT_EQ(s.error().mark.line, 1);
  EXPECT_EQ(s.documents(), 0u);
}

TEST(YamlDoc, ASyntaxErrorNamesTheProblemAndWhere) {
  Stream s = Stream::parse("a: [1, 2\nb: 3\n");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("did not find expected"), std::string::npos) << s.error().message;
  EXPECT_FALSE(s.error().mark.is_null());
  EXPECT_EQ(s.documents(), 0u);
}

TEST(YamlDoc, DocumentsAreCounted) {
  EXPECT_EQ(Stream::parse("").documents(), 0u);
  EXPECT_EQ(Stream::parse("# only a comment\n").documents(), 0u);
  Stream s = Stream::parse("a: 1\n---\nb: 2\n");
  ASSERT_EQ(s.documents(), 2u);
  EXPECT_EQ(s.document(1).Mark().line, 2);
  EXPECT_TRUE(Stream::parse("---\n").document(0).IsNull());
}

TEST(YamlDoc, DeepNestingNeedsNoRecursion) {
  std::string deep(100000, '[');
  deep += std::string(100000, ']');
  Stream s = Stream::parse(deep);
  ASSERT_TRUE(s.ok()) << s.error().message;
  Node n = s.document(0);
  for (int i = 0; i < 5; ++i) n = n[0];
  EXPECT_TRUE(n.IsSequence());
}

}  // namespace
}  // namespace aimesh::yaml
